"""float64 numpy references for convcore's ops. Nothing here imports convcore."""
