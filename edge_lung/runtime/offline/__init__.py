"""Work on recordings already on disk: classify files through the device's own windows (`classify`),
score an exported model on an ICBHI split (`evaluate`), calibrate a copy to a new stethoscope (`calibrate`).

May import: runtime.live, runtime.artifact, core and data.
"""
