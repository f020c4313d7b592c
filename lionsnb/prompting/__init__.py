"""Could an AI assistant pass the degree? Question bank, prompting strategies, backends, grading and the study
(issue 7; Borges et al., PNAS 2024)."""
