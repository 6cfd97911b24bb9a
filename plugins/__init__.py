"""Host-application plugins for varedit (installed as ``varedit_plugins``).

Plugins are discovered through the ``varedit.plugins`` entry-point group; none ship yet.
"""
