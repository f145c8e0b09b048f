"""The super link: routing tokens, their learnable queries, and the hidden states that drive the decoders.

In a sequence, each routing token (`[DET]`, `[SEG]`, `[POSE]`, `<LOC>`, ...) is followed by N `<query>` tokens
(N per routing token from `config.super_link_queries`; 0 means the routing token's own hidden state is used,
as in LISA and u-LLaVA). The `<query>` embeddings are replaced by that routing token's learnable queries (its
own, never shared with another decoder). After the LLM, the last-layer states of the queries (or of the
routing token when N = 0) go through the routing token's MLP projection to its decoder.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and transformers.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN

ROUTING_NAMES = ("det", "seg", "pose", "loc", "gen", "edit")


@dataclass
class RoutingOccurrence:
    """One routing token found in a forward's input, with the hidden states it hands to its decoder."""

    row: int
    position: int
    name: str
    states: torch.Tensor  # (max(N, 1), hidden): the N queries' last-layer states, or the routing token's own


class SuperLinkProjection(nn.Module):
    """MLP from the LLM width to a decoder's input width ([h -> h, h -> width], as u-LLaVA's projectors)."""

    def __init__(self, hidden_size: int, out_features: int, act: str = "gelu"):
        super().__init__()
        self.linear_1 = nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(hidden_size, out_features)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(states)))


class SuperLink(nn.Module):
    """
    Arguments:
        hidden_size (`int`): LLM width.
        routing_token_ids (`dict[str, int]`): routing name -> token id, for every routed name.
        num_queries (`dict[str, int]`): routing name -> number of learnable queries (0: the token's own state).
        output_widths (`dict[str, int]`): routing name -> input width of its decoder.
        query_token_id (`int`): id of the `<query>` placeholder token.
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        routing_token_ids: dict[str, int],
        num_queries: dict[str, int],
        output_widths: dict[str, int],
        query_token_id: int,
    ):
        super().__init__()
        self.routing_token_ids = dict(routing_token_ids)
        self.names_by_id = {token_id: name for name, token_id in routing_token_ids.items()}
        self.num_queries = {name: num_queries.get(name, 0) for name in routing_token_ids}
        self.query_token_id = query_token_id
        self.queries = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(n, hidden_size) * 0.02) for name, n in self.num_queries.items() if n}
        )
        self.projections = nn.ModuleDict(
            {name: SuperLinkProjection(hidden_size, output_widths[name]) for name in routing_token_ids}
        )

    def is_routing(self, input_ids: torch.LongTensor) -> torch.BoolTensor:
        ids = torch.tensor(list(self.names_by_id), device=input_ids.device)
        return torch.isin(input_ids, ids)

    def followers(self, token_id: int) -> int:
        """How many `<query>` tokens follow this token in a sequence (0 for a non-routing token)."""
        name = self.names_by_id.get(int(token_id))
        return self.num_queries[name] if name is not None else 0

    def embed_queries(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Write each routing token's learnable queries into the `<query>` positions that follow it."""
        is_query = input_ids == self.query_token_id
        if not is_query.any():
            return inputs_embeds
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        leader = torch.where(is_query, -1, positions).cummax(dim=1).values  # last non-query position so far
        leader_token = input_ids.gather(1, leader.clamp_min(0))
        offset = positions - leader - 1
        inputs_embeds = inputs_embeds.clone()
        placed = torch.zeros_like(is_query)
        for name, queries in self.queries.items():
            selected = is_query & (leader >= 0) & (leader_token == self.routing_token_ids[name])
            selected &= offset < len(queries)
            inputs_embeds[selected] = queries[offset[selected]].to(inputs_embeds.dtype)
            placed |= selected
        if (stray := is_query & ~placed).any():
            row, position = stray.nonzero()[0].tolist()
            raise ValueError(
                f"a <query> token at row {row}, position {position} does not follow a routing token within its "
                "number of super-link queries; let the processor insert queries after routing tokens"
            )
        return inputs_embeds

    def collect(self, input_ids: torch.LongTensor, hidden_states: torch.Tensor) -> list[RoutingOccurrence]:
        """Every routing token in `input_ids` with the last-layer states of its queries (or its own state)."""
        found = self.is_routing(input_ids).nonzero().tolist()
        occurrences = []
        for row, position in found:
            name = self.names_by_id[int(input_ids[row, position])]
            count = self.num_queries[name]
            if count == 0:
                states = hidden_states[row, position : position + 1]
            else:
                span = input_ids[row, position + 1 : position + 1 + count]
                if len(span) < count or (span != self.query_token_id).any():
                    raise ValueError(
                        f"routing token '{name}' at row {row}, position {position} must be followed by {count} "
                        "<query> tokens in the same input"
                    )
                states = hidden_states[row, position + 1 : position + 1 + count]
            occurrences.append(RoutingOccurrence(row=row, position=position, name=name, states=states))
        return occurrences

    def project(self, occurrence: RoutingOccurrence) -> torch.Tensor:
        """The occurrence's states in its decoder's width: `(max(N, 1), width)`."""
        projection = self.projections[occurrence.name]
        return projection(occurrence.states.to(projection.linear_1.weight))  # its device and dtype


__all__ = ["ROUTING_NAMES", "RoutingOccurrence", "SuperLink", "SuperLinkProjection"]
