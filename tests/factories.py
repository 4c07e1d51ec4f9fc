"""factory_boy factories for the data model."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from webapp.models import AnnotatorProfile, Item, Membership, Project, Response


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    state = Project.ACTIVE


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.ANNOTATOR


class AnnotatorProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AnnotatorProfile

    user = factory.SubFactory(UserFactory)
    tier = AnnotatorProfile.NORMAL


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item
        skip_postgeneration_save = True

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"item-{n}")
    prompt = factory.Faker("sentence")

    @factory.post_generation
    def responses(self, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        if not create:
            return
        texts = extracted if extracted is not None else ["First answer.", "Second answer."]
        for position, text in enumerate(texts):
            Response.objects.create(item=self, position=position, text=text, model_name=f"model-{position}")
