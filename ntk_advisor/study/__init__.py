"""validate() and report: does the advice predict fine-tuning on the user's task; the study
document, its correlations, the linear model, figures and the HTML report."""
