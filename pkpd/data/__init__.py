"""Reading, validating and holding NONMEM-style data sets."""
