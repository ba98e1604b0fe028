"""Processing provider: the "Ask imagery" algorithm for the Toolbox, Modeler, batch and qgis_process."""
