"""The vocabulary every part shares: phone numbers, their normalisation and rendering."""
