class F:
    def r(self, d, w):
        return f"{d["k"]:>{w}} {{x}} {d['n']!r} \N{EM DASH}" + rf'\{w}' + f'''{
  w # c
}'''
