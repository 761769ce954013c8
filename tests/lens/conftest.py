CAUSAL = ["tiny-gpt2", "tiny-llama", "tiny-mixtral", "tiny-neox"]
TEXTS = ["The cat sat on the mat", "hi", "Lenses read the residual stream out"]
