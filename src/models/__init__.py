"""Your own model builders. Put a module here, e.g. src/models/my_net.py with

    def build(inputs: int, outputs: int, **args) -> torch.nn.Module: ...

and name it in params.yaml as model.arch: models.my_net:build, with model.args the keyword arguments it takes.
The contract (what `inputs`, `outputs` and the module's forward mean for a table and for a text) is in
src/chunktrain/recipe/model.py. Stages init, train and evaluate depend on this folder, so editing a model here
reruns them.
"""
