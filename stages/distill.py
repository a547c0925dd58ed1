"""DVC stage `distill@<config>`: see confkd.pipeline.run_distill (``--config NAME``)."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("distill")
