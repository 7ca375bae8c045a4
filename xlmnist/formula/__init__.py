"""Formulas: parsing, copied-down blocks and the cell graph."""
