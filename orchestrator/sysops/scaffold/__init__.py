"""`sysops plugin new`: a new plugin's files rendered from templates shipped as package data.

`names.py` turns a plugin name into the names the files use (package, class, command group, config
section) and refuses a name no scaffold can be made of; `render.py` writes the files of one plugin type
from `templates/` (`common/` for every type, one directory per type for its code, tests and manifest lines).
"""
