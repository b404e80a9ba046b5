"""The one path of a question: rules, retrieval, prompt, generation, evidence, the answer run."""
