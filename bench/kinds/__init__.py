"""Model kinds, one module each (`classifier`, `encoder`, `vlp`), beside what they are built from: `base` (the
kind protocol and registry), `models` (the architectures), `contrastive` (SimCLR), `service` (black-box access)."""
