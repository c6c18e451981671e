"""The offline demo set: templated spoken-style instructions, built by the data builder (data_recipes/configs/demo.yaml)."""
