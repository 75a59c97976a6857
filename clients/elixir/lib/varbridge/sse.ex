defmodule VarBridge.SSE do
  @moduledoc false
  # An incremental Server-Sent Events parser (the WHATWG event stream
  # format). Body parts from the network do not align with lines or events,
  # so the parser keeps the unfinished tail and the event being built.
  #
  # An event is %{event: type ("message" when none), data: the data lines
  # joined by "\n", id: the id field of this event or nil}. Comments
  # (":" lines) and events without data are dropped, as browsers do.

  # cr: the last line ended with a CR at the end of a chunk, so a LF that
  # starts the next one belongs to it.
  defstruct buf: "", event: nil, data: [], id: nil, bom: true, cr: false

  @type event :: %{event: String.t(), data: String.t(), id: String.t() | nil}

  def new, do: %__MODULE__{}

  @doc "Feeds a chunk; returns the events it completed, in order."
  @spec feed(%__MODULE__{}, binary()) :: {[event()], %__MODULE__{}}
  def feed(%__MODULE__{} = p, chunk) do
    {chunk, cr} =
      case {p.cr, chunk} do
        {cr, ""} -> {"", cr}
        {true, "\n" <> rest} -> {rest, false}
        _ -> {chunk, false}
      end

    p = strip_bom(%{p | buf: p.buf <> chunk, cr: cr})
    lines(p, [])
  end

  # A UTF-8 BOM may start the stream, and only there.
  defp strip_bom(%{bom: false} = p), do: p
  defp strip_bom(%{buf: <<0xEF, 0xBB, 0xBF, rest::binary>>} = p), do: %{p | buf: rest, bom: false}

  defp strip_bom(%{buf: buf} = p) when byte_size(buf) < 3 do
    if String.starts_with?(<<0xEF, 0xBB, 0xBF>>, buf), do: p, else: %{p | bom: false}
  end

  defp strip_bom(p), do: %{p | bom: false}

  defp lines(%{bom: true} = p, acc), do: {Enum.reverse(acc), p}

  defp lines(p, acc) do
    case :binary.match(p.buf, ["\r\n", "\n", "\r"]) do
      :nomatch ->
        {Enum.reverse(acc), p}

      # A CR at the very end may be the first half of a CRLF.
      {pos, 1} when pos == byte_size(p.buf) - 1 and binary_part(p.buf, pos, 1) == "\r" ->
        <<line::binary-size(pos), _>> = p.buf
        {p, acc} = line(%{p | buf: "", cr: true}, line, acc)
        {Enum.reverse(acc), p}

      {pos, len} ->
        <<line::binary-size(pos), _::binary-size(len), rest::binary>> = p.buf
        {p, acc} = line(%{p | buf: rest}, line, acc)
        lines(p, acc)
    end
  end

  defp line(p, "", acc) do
    case p.data do
      [] ->
        {%{p | event: nil, id: nil}, acc}

      data ->
        ev = %{
          event: p.event || "message",
          data: data |> Enum.reverse() |> Enum.join("\n"),
          id: p.id
        }

        {%{p | event: nil, data: [], id: nil}, [ev | acc]}
    end
  end

  defp line(p, ":" <> _comment, acc), do: {p, acc}

  defp line(p, line, acc) do
    {field, value} =
      case :binary.split(line, ":") do
        [f, " " <> v] -> {f, v}
        [f, v] -> {f, v}
        [f] -> {f, ""}
      end

    p =
      case field do
        "event" -> %{p | event: value}
        "data" -> %{p | data: [value | p.data]}
        "id" -> if String.contains?(value, <<0>>), do: p, else: %{p | id: value}
        _ -> p
      end

    {p, acc}
  end
end
