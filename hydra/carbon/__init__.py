"""Carbon-aware dispatch and CO2 accounting (issue 17).

- :mod:`hydra.carbon.signal`: one small interface for grid carbon intensity (latest, forecast,
  history; gCO2eq/kWh per zone and hour) and the guard that keeps a slow or dead source from
  blocking dispatch (last known value, then a default, flagged as such).
- :mod:`hydra.carbon.replay`, :mod:`hydra.carbon.ukgrid`, :mod:`hydra.carbon.electricitymaps`,
  :mod:`hydra.carbon.watttime`: the sources; :mod:`hydra.carbon.providers` builds one from settings.
- :mod:`hydra.carbon.policy`: the decision the trusted dispatcher asks for a carbon-aware job.
- :mod:`hydra.carbon.accounting`: energy and grams of CO2 per chunk, job, volunteer and zone.
- :mod:`hydra.carbon.options`: the ``--carbon-aware`` and ``--deadline`` submit options.
"""
