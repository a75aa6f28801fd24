"""The app's shared services, one concept each, none importing Gradio: the score data
(:mod:`.data`), the routers (:mod:`.routers`), their maps (:mod:`.maps`) and the one training run
(:mod:`.training`). :class:`app.context.AppContext` holds one of each."""
