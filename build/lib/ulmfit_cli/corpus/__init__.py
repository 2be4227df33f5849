"""Corpus reading: Wikipedia dumps, text files and labelled tables, tokenization and vocab."""
