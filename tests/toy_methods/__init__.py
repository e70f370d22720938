"""Methods the tests register, to show that adding one is a folder and a register() line."""
