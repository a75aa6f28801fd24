"""Launch the RouterDC demo (Gradio). Options: ``python app.py --help``; every option also has an
environment variable (see app/settings.py). A Hugging Face Space runs this file."""

import sys
import time

if __name__ == "__main__":
    t0 = time.perf_counter()
    from app.settings import parse_args

    settings, args = parse_args(sys.argv[1:])
    from app.services.routers import Preload

    preload = Preload.start(settings)  # data + router load in threads while Gradio imports below
    from app.main import main

    sys.exit(main(settings=settings, args=args, preload=preload, t0=t0))
