"""Networks: the SAUNet generator, the critic, their layers and encoders, and the weights hub."""
