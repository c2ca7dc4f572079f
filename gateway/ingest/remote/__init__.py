"""The device's files over the network: the box's SMB shares, CIFS mounts, an FTP receiver."""
