"""The vocabulary every part shares: phone numbers and the root of the domain errors."""
