"""The page's parts: one module per tab, each building its components and holding the callbacks that
serve them, and `wiring`, the one place where events connect them. `app.layout.build_demo` puts the
tabs together in page order.

    shared       what every tab reads or writes: the per-session states, `warn`, `to_stage`
    model_calls  the model calls of the page, each wrapped once by `gpu` (spaces.GPU on ZeroGPU)
    stage_tab    ▶ Stage: the stage component, opening on the example decoded ahead of time
    text_tab     ✎ Your text: the text, the token picker, the decoding settings, Run; any-length blanks
    compare_tab  ⚖ Compare: every method on the same blanks; load one run onto the stage
    lab_tab      ≋ Order lab: one text scored under many orders; the mask gallery
    details_tab  ⌕ Step details: the step the stage stopped on; branching; attention weights
    export_tab   ⤓ Export: downloads of the trace, the masks, the figures, the GIF and the player
    how_tab      ? How A3 works: the explainer
    api          the named API endpoints `infill` and `order_likelihoods`
    wiring       every event of the page
    sessions     a closed or idle tab's runs let go (the unload event, a sweep), the memory handed back
"""
