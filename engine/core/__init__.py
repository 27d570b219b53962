"""The pure core: `step(state, input, now, program) -> (state, effects)` and the values around it
(user state, effects, the delivery steps, time arithmetic, the compiled program, Segment messages).

No I/O and no clock: it imports the language (`journeys`) and the standard library, never another
engine room, so the daemon and the dry-run run exactly this code.
"""
