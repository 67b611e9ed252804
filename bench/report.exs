# Turns the bench's samples into figures, a markdown table and an SVG bar
# chart of the ratios to the plain Port (no dependencies: the SVG is written
# by hand).

defmodule Bench.Report do
  @moduledoc false

  alias Bench.Impl

  # {key, label, unit, better, goals}: goals maps an implementation to
  # {:ratio, x} (ratio to the plain Port in the same round) or {:abs, x}.
  # Shared: issue 11; isolated: issue 5's port mode goals plus issue 11's
  # close and mass kill; node: issue 5, and issue 13 where it asks more (throughput ≥ 0.5×).
  @metrics [
    {:tp_default, "Throughput, `head -c 256MiB /dev/zero`, default options", "MB/s", :higher,
     %{shared: {:ratio, 0.8}, isolated: {:ratio, 0.8}, node: {:ratio, 0.5}}},
    {:tp_1m, "Throughput, `head -c 256MiB /dev/zero`, 1 MiB window", "MB/s", :higher, %{}},
    {:tp_stray,
     "Throughput, `head -c 256MiB /dev/zero`, a message the owner leaves in its mailbox", "MB/s",
     :higher, %{}},
    {:tp_par, "Throughput, 8 × `head -c 256MiB /dev/zero` at once (total)", "MB/s", :higher,
     %{shared: {:ratio, 0.8}}},
    {:fan_in, "Fan-in, 200 × `head -c 1MB /dev/zero` at once, all read by one owner (total)",
     "MB/s", :higher, %{}},
    {:rt_median, "Round trip, 10 000 × 100 B through `cat`, median", "µs", :lower,
     %{shared: {:ratio, 2.0}, isolated: {:ratio, 1.2}, node: {:ratio, 2.5}}},
    {:rt_p99, "Round trip, 10 000 × 100 B through `cat`, p99", "µs", :lower, %{}},
    {:spawn_seq, "Spawn `true` and wait for its exit, 500 in a row", "ms each", :lower,
     %{shared: {:ratio, 1.5}, isolated: {:ratio, 2.0}, node: {:ratio, 1.0}}},
    {:spawn_par, "Spawn `true` and wait for its exit, 500 by 50 at a time", "ms each", :lower,
     %{shared: {:ratio, 1.5}, isolated: {:ratio, 2.0}, node: {:ratio, 1.0}}},
    {:kill_median, "Kill: owner killed → child + grandchild gone, median", "ms", :lower,
     %{shared: {:abs, 20.0}, isolated: {:abs, 20.0}, node: {:abs, 20.0}}},
    {:kill_max, "Kill: owner killed → child + grandchild gone, max", "ms", :lower, %{}},
    {:close_median, "Close → `cat` gone, median", "ms", :lower,
     %{shared: {:abs, 5.0}, isolated: {:abs, 5.0}}},
    {:mass_kill, "1 000 owners of `sleep 600` killed at once → all gone", "ms", :lower,
     %{shared: {:abs, 1000.0}, isolated: {:abs, 1000.0}, node: {:abs, 1000.0}}},
    {:mem_rss, "Memory, 200 × `sleep 60`: RSS ps_port adds per child", "KiB", :lower,
     %{shared: {:abs, 256.0}, isolated: {:abs, 6144.0}, node: {:abs, 256.0}}},
    {:mem_pss, "Memory, 200 × `sleep 60`: PSS ps_port adds per child", "KiB", :lower, %{}},
    {:mem_beam, "Memory, 200 × `sleep 60`: BEAM growth per child", "KiB", :lower, %{}},
    {:mem_rss_big, "Memory, 1 000 × `sleep 60`: RSS ps_port adds per child", "KiB", :lower,
     %{shared: {:abs, 256.0}, node: {:abs, 256.0}}},
    {:mem_pss_big, "Memory, 1 000 × `sleep 60`: PSS ps_port adds per child", "KiB", :lower, %{}},
    {:mem_beam_big, "Memory, 1 000 × `sleep 60`: BEAM growth per child", "KiB", :lower, %{}}
  ]

  # Metrics whose samples are pooled over rounds (one list per round) instead
  # of being one figure per round.
  @pooled %{kill_median: :kill, kill_max: :kill, close_median: :close}

  # No plain-Port ratio: a plain Port adds no OS process (memory), or cannot
  # stop a program that ignores stdin (mass kill).
  @no_ratio [:mem_rss, :mem_pss, :mem_beam, :mem_rss_big, :mem_pss_big, :mem_beam_big, :mass_kill]

  def metrics, do: @metrics

  @doc """
  `samples` is a list of `{round, impl, figures_map}`. Returns a list of rows:
  %{key, label, unit, better, goals, cells: %{impl => stats}, ratios: %{impl => stats}}.
  """
  def summarize(samples) do
    for {key, label, unit, better, goals} <- @metrics,
        row = row(samples, key),
        row != nil do
      Map.merge(row, %{key: key, label: label, unit: unit, better: better, goals: goals})
    end
  end

  defp row(samples, key) do
    per_round =
      for impl <- Impl.all(), into: %{} do
        {impl, values(samples, impl, key)}
      end

    if Enum.all?(per_round, fn {_, v} -> v == [] end) do
      nil
    else
      cells = for {impl, vals} <- per_round, vals != [], into: %{}, do: {impl, stats(vals, key)}
      %{cells: cells, ratios: ratios(samples, per_round, key)}
    end
  end

  # One figure per round, in round order: [{round, value}].
  defp values(samples, impl, key) do
    case Map.fetch(@pooled, key) do
      {:ok, src} ->
        all = for {_r, ^impl, %{^src => list}} <- samples, v <- list, do: v
        if all == [], do: [], else: [{:pooled, all}]

      :error ->
        for {r, ^impl, %{^key => v}} <- samples, do: {r, v}
    end
  end

  defp stats([{:pooled, all}], key) do
    sorted = Enum.sort(all)

    case key do
      :kill_max -> %{median: List.last(sorted), min: hd(sorted), max: List.last(sorted), n: 1}
      _ -> %{median: median(sorted), min: hd(sorted), max: List.last(sorted), n: length(all)}
    end
  end

  defp stats(vals, _key) do
    sorted = vals |> Enum.map(&elem(&1, 1)) |> Enum.sort()
    %{median: median(sorted), min: hd(sorted), max: List.last(sorted), n: length(sorted)}
  end

  defp ratios(_samples, per_round, key) do
    # Memory has no meaningful ratio: a plain Port adds no OS process.
    plain = if key in @no_ratio, do: [], else: per_round[:plain]

    for impl <- Impl.helpers(), per_round[impl] != [], plain != [], into: %{} do
      rs =
        case {plain, per_round[impl]} do
          {[{:pooled, p}], [{:pooled, v}]} ->
            pick = if key == :kill_max, do: &Enum.max/1, else: &(&1 |> Enum.sort() |> median())
            base = pick.(p)
            if base > 0, do: [pick.(v) / base], else: []

          {p, v} ->
            base = Map.new(p)

            for {r, x} <- v, b = base[r], b != nil, b > 0, do: x / b
        end

      case Enum.sort(rs) do
        [] -> {impl, nil}
        sorted -> {impl, %{median: median(sorted), min: hd(sorted), max: List.last(sorted)}}
      end
    end
    |> Enum.reject(fn {_, v} -> v == nil end)
    |> Map.new()
  end

  def median([]), do: nil

  def median(sorted) do
    n = length(sorted)

    if rem(n, 2) == 1,
      do: Enum.at(sorted, div(n, 2)),
      else: (Enum.at(sorted, div(n, 2) - 1) + Enum.at(sorted, div(n, 2))) / 2
  end

  @doc "Whether `impl`'s figures in `row` meet its goal: true, false or nil (no goal)."
  def goal_met(row, impl) do
    case {Map.get(row.goals, impl), row.ratios[impl], row.cells[impl]} do
      {{:ratio, g}, %{median: r}, _} -> if row.better == :higher, do: r >= g, else: r <= g
      {{:abs, g}, _, %{median: v}} -> v <= g
      _ -> nil
    end
  end

  ## Markdown

  def markdown(rows, info) do
    header = """
    - Machine: #{info.machine}
    - Versions: #{info.versions}
    - Run: #{info.date}, #{info.rounds} rounds, the implementations interleaved (their order rotates every round); load average #{info.load_before} before, #{info.load_after} after
    - Node mode opened through #{info.node_api}
    - `ps_port` stripped (`go build -trimpath -ldflags=-s`): #{info.binary_size}

    Each cell is the median over rounds with min–max in brackets; a ratio is ps_port's figure divided by the plain Port's in the same round (the median and range of those ratios). Throughput: higher is better; every other row: lower is better. The kill rows pool #{info.kill_samples} samples per implementation and round, the close row #{info.close_samples}. Memory has no plain-Port ratio (a plain Port adds no OS process), nor has the mass kill (a plain Port cannot stop a `sleep`). Shared: the growth of a freshly started shared ps_port's RSS per child (its idle RSS not counted); isolated: each child's own ps_port; node: the growth of a fresh node's RSS.

    | scenario | unit | plain Port | shared (default) | isolated: true | node mode | shared / plain | isolated / plain | node / plain | goal (shared; isolated; node) |
    |---|---|---|---|---|---|---|---|---|---|
    """

    helpers = Impl.helpers()

    body =
      Enum.map_join(rows, "", fn row ->
        "| #{row.label} | #{row.unit} | " <>
          Enum.map_join(Impl.all(), "", &"#{cell(row, &1)} | ") <>
          Enum.map_join(helpers, "", &"#{ratio_cell(row, &1)} | ") <>
          "#{goal_cell(row)} |\n"
      end)

    integrity =
      "\nIntegrity (every payload byte of every run above, plus #{info.integrity_note}):\n\n" <>
        "| implementation | bytes written | bytes delivered | runs | equal |\n|---|---|---|---|---|\n" <>
        Enum.map_join(Impl.all(), "", fn impl ->
          {w, d, runs} = Map.get(info.integrity, impl, {0, 0, 0})

          "| #{Impl.label(impl)} | #{group(w)} | #{group(d)} | #{runs} | " <>
            "#{if w == d, do: "yes", else: "**NO**"} |\n"
        end)

    header <> body <> integrity
  end

  defp cell(row, impl) do
    case row.cells[impl] do
      nil -> "–"
      %{median: m, min: lo, max: hi} -> "#{fmt(m)} (#{fmt(lo)}–#{fmt(hi)})"
    end
  end

  defp ratio_cell(row, impl) do
    case row.ratios[impl] do
      nil ->
        "–"

      %{median: m, min: lo, max: hi} ->
        mark =
          case {Map.get(row.goals, impl), goal_met(row, impl)} do
            {{:ratio, _}, true} -> " ✅"
            {{:ratio, _}, false} -> " ❌"
            _ -> ""
          end

        "#{fmt(m)}× (#{fmt(lo)}–#{fmt(hi)})#{mark}"
    end
  end

  defp goal_cell(row) do
    Impl.helpers()
    |> Enum.map(fn impl ->
      case Map.get(row.goals, impl) do
        nil ->
          "–"

        {:ratio, g} ->
          op = if row.better == :higher, do: "≥", else: "≤"
          "#{op} #{fmt(g)}×"

        {:abs, g} ->
          met = if goal_met(row, impl), do: " ✅", else: " ❌"
          "≤ #{fmt(g)} #{row.unit}#{met}"
      end
    end)
    |> Enum.join("; ")
  end

  def fmt(nil), do: "–"
  def fmt(x) when is_integer(x), do: Integer.to_string(x)
  def fmt(x) when x >= 100, do: :erlang.float_to_binary(x / 1, decimals: 0)
  def fmt(x) when x >= 10, do: :erlang.float_to_binary(x / 1, decimals: 1)
  def fmt(x) when x >= 1, do: :erlang.float_to_binary(x / 1, decimals: 2)
  def fmt(x), do: :erlang.float_to_binary(x / 1, decimals: 3)

  defp group(n) do
    n
    |> Integer.to_string()
    |> String.reverse()
    |> String.graphemes()
    |> Enum.chunk_every(3)
    |> Enum.map_join(" ", &Enum.join/1)
    |> String.reverse()
  end

  ## SVG: one row per ratio, bars from the 1× line on a log2 axis

  @chart_keys [
    :tp_default,
    :tp_1m,
    :tp_stray,
    :rt_median,
    :rt_p99,
    :spawn_seq,
    :spawn_par,
    :tp_par,
    :fan_in
  ]
  @colors %{shared: "#4c78a8", isolated: "#54a24b", node: "#f58518"}

  def svg(rows, info) do
    rows = Enum.filter(rows, &(&1.key in @chart_keys and map_size(&1.ratios) > 0))
    vals = for r <- rows, {_, s} <- r.ratios, v <- [s.min, s.max], v > 0, do: v
    goals = for r <- rows, {_, {:ratio, g}} <- Map.to_list(r.goals), do: g
    lo = min_pow2(Enum.min(vals ++ goals ++ [0.5]) / 1.15)
    hi = max_pow2(Enum.max(vals ++ goals ++ [2.0]) * 1.15)

    left = 330
    width = 1100
    plot_w = width - left - 70
    row_h = 46
    top = 92
    height = top + row_h * length(rows) + 60

    x = fn v ->
      left + (:math.log2(v) - :math.log2(lo)) / (:math.log2(hi) - :math.log2(lo)) * plot_w
    end

    ticks =
      Stream.iterate(lo, &(&1 * 2))
      |> Enum.take_while(&(&1 <= hi * 1.0001))

    grid =
      Enum.map(ticks, fn t ->
        xt = x.(t)
        stroke = if t == 1, do: ~s(stroke="#222" stroke-width="1.5"), else: ~s(stroke="#ddd")

        ~s(<line x1="#{r(xt)}" y1="#{top - 8}" x2="#{r(xt)}" y2="#{top + row_h * length(rows)}" #{stroke}/>) <>
          ~s(<text x="#{r(xt)}" y="#{top + row_h * length(rows) + 18}" text-anchor="middle">#{tick_label(t)}</text>)
      end)

    bars =
      rows
      |> Enum.with_index()
      |> Enum.map(fn {row, i} ->
        y0 = top + i * row_h
        dir = if row.better == :higher, do: "higher is better", else: "lower is better"

        label =
          ~s(<text x="#{left - 10}" y="#{y0 + 19}" text-anchor="end">#{esc(short(row.key))}</text>) <>
            ~s(<text x="#{left - 10}" y="#{y0 + 34}" text-anchor="end" class="sub">#{dir}</text>)

        bars =
          Impl.helpers()
          |> Enum.with_index()
          |> Enum.map(fn {impl, j} ->
            case row.ratios[impl] do
              nil ->
                ""

              s ->
                yb = y0 + 4 + j * 13
                x1 = x.(1.0)
                xm = x.(s.median)
                {bx, bw} = if xm >= x1, do: {x1, xm - x1}, else: {xm, x1 - xm}

                goal =
                  case Map.get(row.goals, impl) do
                    {:ratio, g} ->
                      ~s(<line x1="#{r(x.(g))}" y1="#{yb - 2}" x2="#{r(x.(g))}" y2="#{yb + 16}" stroke="#c00" stroke-width="2" stroke-dasharray="3,2"/>)

                    _ ->
                      ""
                  end

                ~s(<rect x="#{r(bx)}" y="#{yb}" width="#{r(max(bw, 1))}" height="11" fill="#{@colors[impl]}"/>) <>
                  ~s(<line x1="#{r(x.(s.min))}" y1="#{yb + 5}" x2="#{r(x.(s.max))}" y2="#{yb + 5}" stroke="#111"/>) <>
                  ~s(<line x1="#{r(x.(s.min))}" y1="#{yb + 2}" x2="#{r(x.(s.min))}" y2="#{yb + 9}" stroke="#111"/>) <>
                  ~s(<line x1="#{r(x.(s.max))}" y1="#{yb + 2}" x2="#{r(x.(s.max))}" y2="#{yb + 9}" stroke="#111"/>) <>
                  goal <>
                  ~s(<text x="#{r(max(x.(s.max), max(xm, x1)) + 6)}" y="#{yb + 10}" class="val">#{fmt(s.median)}×</text>)
            end
          end)

        sep =
          ~s(<line x1="20" y1="#{y0 + row_h}" x2="#{width - 20}" y2="#{y0 + row_h}" stroke="#f0f0f0"/>)

        [label, bars, sep]
      end)

    legend =
      Impl.helpers()
      |> Enum.with_index()
      |> Enum.map_join(fn {impl, j} ->
        lx = left + j * 170

        ~s(<rect x="#{lx}" y="44" width="14" height="14" fill="#{@colors[impl]}"/>) <>
          ~s(<text x="#{lx + 20}" y="56">#{esc(Impl.label(impl))}</text>)
      end)
      |> Kernel.<>(
        ~s(<line x1="#{left + 520}" y1="44" x2="#{left + 520}" y2="58" stroke="#c00" stroke-width="2" stroke-dasharray="3,2"/>) <>
          ~s(<text x="#{left + 528}" y="56">goal</text>) <>
          ~s(<line x1="#{left + 570}" y1="51" x2="#{left + 600}" y2="51" stroke="#111"/>) <>
          ~s(<text x="#{left + 606}" y="56">min–max over rounds</text>)
      )

    """
    <svg xmlns="http://www.w3.org/2000/svg" width="#{width}" height="#{height}" viewBox="0 0 #{width} #{height}" font-family="sans-serif" font-size="12">
    <style>.sub{fill:#777;font-size:10px}.val{font-size:11px}.t{font-size:15px;font-weight:bold}</style>
    <rect width="100%" height="100%" fill="#fff"/>
    <text x="20" y="24" class="t">ps_port vs plain Port: ratio to the plain Port in the same round (log scale, 1× = plain Port)</text>
    <text x="20" y="40" class="sub">#{esc(info.machine)}; #{esc(info.date)}; #{info.rounds} rounds</text>
    #{legend}
    #{IO.iodata_to_binary(grid)}
    #{IO.iodata_to_binary(bars)}
    <text x="#{left + div(plot_w, 2)}" y="#{height - 14}" text-anchor="middle">ratio to plain Port</text>
    </svg>
    """
  end

  defp short(:tp_default), do: "Throughput, default options"
  defp short(:tp_1m), do: "Throughput, 1 MiB window"
  defp short(:tp_stray), do: "Throughput, a stray message"
  defp short(:rt_median), do: "Round trip through cat, median"
  defp short(:rt_p99), do: "Round trip through cat, p99"
  defp short(:spawn_seq), do: "Spawn true, in a row"
  defp short(:spawn_par), do: "Spawn true, 50 at a time"
  defp short(:tp_par), do: "Throughput, 8 at once"
  defp short(:fan_in), do: "Fan-in, 200 to one owner"

  defp min_pow2(v), do: :math.pow(2, Float.floor(:math.log2(v)))
  defp max_pow2(v), do: :math.pow(2, Float.ceil(:math.log2(v)))

  defp tick_label(t) when t >= 1, do: "#{round(t)}×"
  defp tick_label(t), do: "1/#{round(1 / t)}×"

  defp r(v), do: :erlang.float_to_binary(v / 1, decimals: 1)

  defp esc(s) do
    s
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
    |> String.replace("`", "")
  end
end
