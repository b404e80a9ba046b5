"""The machine under the appliance: the online door, the kernel network lock, hardware, power."""
