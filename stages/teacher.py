"""DVC stage `teacher`: see confkd.pipeline.run_teacher."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("teacher")
