"""The durable store-and-forward queue on local flash."""
