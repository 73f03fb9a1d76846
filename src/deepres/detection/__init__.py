"""The paper's detection half (section 4.3, Appendix A): Faster R-CNN with the project's nets, its data and metrics."""
