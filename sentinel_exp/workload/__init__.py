"""What each request asks: prompts cycled, from a file, or synthetic of a target length."""
