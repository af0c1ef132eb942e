"""What a batch leaves: report rows and results/exports, the HTML gallery and its
templates, the plan text, and the output-path layout."""
