"""Programs: operations of several named values, as a graph, and their derivatives.

``nary`` (the n-ary operation contract and registry), ``ops`` (the n-ary operations), ``program``
(the graph: shapes, evaluation, JVP, VJP), ``strategies`` (Jacobians by forward, reverse and the
sum over paths), ``expression`` (the safe expression parser) and ``requests`` (one entry point per
request kind, limits checked first).
"""
