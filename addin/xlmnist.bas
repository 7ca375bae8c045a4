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
