"""Ordinary questions, none of them to be forgotten.

Two uses: Phase I trains the unlearning token on them (a token that refuses after any question,
and is never emitted after an ordinary answer), and Phase II puts their chat-formatted keys into the
preserved set, because prose alone protected question-style keys little on SmolLM2.
"""

from __future__ import annotations

_TOPICS: tuple[str, ...] = (
    "photosynthesis",
    "gravity",
    "a rainbow",
    "inflation",
    "a volcano",
    "the internet",
    "democracy",
    "a black hole",
    "vaccination",
    "recycling",
    "a compiler",
    "evolution",
    "an earthquake",
    "a hurricane",
    "electricity",
    "a database",
    "meditation",
    "compound interest",
    "the water cycle",
    "a neural network",
    "cloud computing",
    "a glacier",
    "friction",
    "a tide",
    "the immune system",
    "a haiku",
    "a sonnet",
    "supply and demand",
    "climate change",
    "a solar eclipse",
    "magnetism",
    "a calorie",
    "an algorithm",
    "a telescope",
    "a budget",
    "a marathon",
    "jazz",
    "a symphony",
    "chess",
    "origami",
)
_FORMS: tuple[str, ...] = ("What is {}?", "Can you explain {} in simple terms?", "Why is {} important?")
_TASKS: tuple[str, ...] = (
    "How do I boil an egg?",
    "How do I change a flat tyre?",
    "How can I improve my sleep?",
    "How do I write a cover letter?",
    "How should I prepare for a job interview?",
    "How do I make bread at home?",
    "What are some tips for learning a new language?",
    "How can I save money each month?",
    "How do I start running?",
    "What should I pack for a weekend trip?",
    "How do I plant tomatoes?",
    "How can I be more productive at work?",
    "How do I clean a cast iron pan?",
    "How do I tie a tie?",
    "What is a good way to learn programming?",
    "How do I make a cup of tea?",
)


def general_questions() -> list[str]:
    """About 140 ordinary questions: explanations of common topics and everyday how-tos."""
    return [form.format(topic) for topic in _TOPICS for form in _FORMS] + list(_TASKS)
