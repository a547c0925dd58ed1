"""DVC stage `augment`: see confkd.pipeline.run_augment."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("augment")
