"""DVC stage `teacher_reference`: see confkd.pipeline.run_teacher_reference."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("teacher_reference")
