"""A trained sheet as a PyTorch module, and a PyTorch model as a workbook."""
