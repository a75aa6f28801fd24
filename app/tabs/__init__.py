"""One builder per tab (``build_*_tab(ctx, session, ...)``), each wiring its own handlers: Route,
Explore (the only one that draws the embedding map), Train and Evaluate."""
