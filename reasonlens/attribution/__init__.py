"""Attribution of reasoning outcomes to model components (Integrated Policy Gradient) and steering."""
