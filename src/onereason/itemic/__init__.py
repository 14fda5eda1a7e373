"""Items as semantic IDs: text embeddings → residual k-means codes → tokens, trie, tokenizer."""
