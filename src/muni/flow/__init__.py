from muni.flow.paths import LinearPath, flow_matching_loss
from muni.flow.samplers import SOLVERS, euler, heun, integrate

__all__ = ["LinearPath", "flow_matching_loss", "SOLVERS", "euler", "heun", "integrate"]
