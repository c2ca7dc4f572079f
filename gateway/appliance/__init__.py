"""The appliance: first boot, network and time settings of the flashed box."""
