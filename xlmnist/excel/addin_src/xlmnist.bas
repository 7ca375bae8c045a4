Attribute VB_Name = "XlmnistRibbon"
' xlmnist ribbon add-in: each button runs one entry point of xlmnist.excel on the active workbook
' through xlwings' RunPython (the xlwings module of this add-in).
' "Step" and "Reset" are VBA keywords, so every macro carries the xlmnist prefix.
Option Explicit

Private Sub RunXlmnist(action As String)
    RunPython "import xlmnist.excel as x; x.run('" & action & "')"
End Sub

' Ribbon callbacks (customUI.xml onAction), signature as xlwings' ribbon add-in template expects
Sub XlmnistTrain(control As IRibbonControl)
    RunXlmnist "train"
End Sub

Sub XlmnistStep(control As IRibbonControl)
    RunXlmnist "step"
End Sub

Sub XlmnistExport(control As IRibbonControl)
    RunXlmnist "export"
End Sub

Sub XlmnistReset(control As IRibbonControl)
    RunXlmnist "reset"
End Sub

Sub XlmnistCancel(control As IRibbonControl)
    CancelRun
End Sub

' The same four actions as plain macros (Alt+F8, or a button on a sheet)
Sub TrainSheet()
    RunXlmnist "train"
End Sub

Sub StepSheet()
    RunXlmnist "step"
End Sub

Sub ExportSheet()
    RunXlmnist "export"
End Sub

Sub ResetSheet()
    RunXlmnist "reset"
End Sub

' Cancel without Python: the flag file xlmnist.excel.runs polls at every step,
' "." & <workbook name> & ".xlmnist-cancel" beside the workbook
Sub CancelRun()
    Dim sep As String, f As Integer
    #If Mac Then
        sep = "/"
    #Else
        sep = "\"
    #End If
    If ActiveWorkbook Is Nothing Then Exit Sub
    If ActiveWorkbook.Path = "" Or InStr(ActiveWorkbook.Path, "://") > 0 Then
        MsgBox "This workbook is not saved in a local folder: no xlmnist run can be going on.", vbInformation, "xlmnist"
        Exit Sub
    End If
    On Error GoTo Failed
    f = FreeFile
    Open ActiveWorkbook.Path & sep & "." & ActiveWorkbook.Name & ".xlmnist-cancel" For Output As #f
    Print #f, "cancel"
    Close #f
    Application.StatusBar = "xlmnist: cancel requested; the run stops at its next step"
    Exit Sub
Failed:
    MsgBox "Could not request the cancel: " & Err.Description, vbExclamation, "xlmnist"
End Sub
