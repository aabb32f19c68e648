"""Why the model decided as it did: occlusion saliency (`saliency`), the clinician report that
`edge-lung report` writes (`report`, pictures in `report_plots`, matplotlib imported lazily) and embedding
maps (`embedding`, scikit-learn).

May import: runtime.offline, runtime.live, runtime.artifact, core and data.
"""
