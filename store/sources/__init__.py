"""Where models come from: local files and folders, Hugging Face repos."""
