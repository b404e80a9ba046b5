"""`appliance doctor`: the checks, the air-gap checks and the self-test it watches."""
