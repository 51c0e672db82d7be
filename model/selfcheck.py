"""`python -m model.selfcheck`: the command's name; the checks live in model.eval.selfcheck."""

from model.eval.selfcheck import main

if __name__ == "__main__":
    raise SystemExit(main())
