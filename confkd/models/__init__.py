"""Model construction and loading (teachers, students)."""
