"""The offline demo set: templated spoken-style instructions, built by the data builder (configs/demo.yaml)."""
