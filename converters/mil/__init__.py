"""A numpy reference interpreter for the Core ML (MIL) programs restv2-edge exports."""
