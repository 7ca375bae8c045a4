"""The file format: cell references, reading a workbook's zip, editing cells and writing files."""
