"""What the appliance keeps of its answers: history, the hash-chained answer log, certificates."""
